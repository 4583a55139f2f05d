//! A chunkserver that hangs (SIGSTOP: still connected and registered, but silent) holds
//! up only the writes already bound to it: once an order to it has timed out, new chunks
//! go to the other servers. A chain write it hangs in goes on without it once the data
//! connection's keep-alive fails. Reads of a chunk with another copy go there. Deletions
//! on the other servers do not wait for it.

use elkfs_tests::copies::{ino, read_locations};
use elkfs_tests::fsutil::{assert_same_bytes, Rng};
use elkfs_tests::{Cluster, Opts, START_TIMEOUT};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

/// A chunk data connection's keep-alive gives up on a silent peer 10 s after its last
/// frame: a read that took this long waited for the hung server instead of going to the
/// other copy.
const HUNG_CONNECTION_NOTICED: Duration = Duration::from_secs(8);

/// Three chunkservers. The master must not drop the hung one for its missed heartbeats
/// during a test: what is shown is how orders and reads get around it.
fn cluster(goal: u32) -> Cluster {
    Cluster::start(Opts {
        chunkservers: 3,
        root_goal: Some(goal),
        master_config: "chunkserver_timeout_secs = 300\n".to_owned(),
        ..Opts::default()
    })
}

#[test]
fn a_hung_chunkserver_gets_no_more_new_chunks() {
    let c = cluster(1);
    let m = c.mount();
    let hung = 1;
    c.signal_chunkserver(hung, libc::SIGSTOP);
    let files: Vec<(String, Vec<u8>)> = (0..30u8)
        .map(|i| (format!("f{i}"), vec![i; 10_000 + usize::from(i)]))
        .collect();
    for (name, content) in &files {
        fs::write(m.join(name), content).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    // `elkfs status` shows which server rests, and only that one.
    let resting: Vec<(String, bool)> = c
        .status()
        .expect("status")
        .servers
        .iter()
        .map(|s| (s.addr.clone(), s.resting_secs > 0))
        .collect();
    let addr = c.chunkserver_addr(hung);
    assert!(
        resting.iter().all(|(a, r)| *r == (*a == addr)),
        "resting servers: {resting:?}, hung: {addr}"
    );
    c.signal_chunkserver(hung, libc::SIGCONT);
    for (name, content) in &files {
        let got = fs::read(m.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert_same_bytes(&got, content, name);
    }
    let log = fs::read_to_string(c.log_path("master")).expect("master log");
    let failed = log
        .lines()
        .filter(|l| l.contains("chunk order failed") && l.contains(&addr))
        .count();
    // One writer: the first new chunk placed there waited for its order to time out, and
    // nothing was placed there after it.
    assert_eq!(
        failed, 1,
        "chunk orders to the hung server that failed:\n{log}"
    );
    c.assert_daemons_alive("a chunkserver hung and recovered");
}

#[test]
fn a_chain_write_goes_on_without_a_member_that_hangs() {
    const PIECE: usize = 1 << 20;
    const PIECES: usize = 48;
    let c = cluster(3);
    let m = c.mount();
    let content = Rng::new("hung chain").bytes(PIECE * PIECES);
    let mut f = fs::File::create(m.join("f")).expect("create");
    // A steady writer, so the chain stream is open, with data in flight, at the stop.
    let mut pieces = content.chunks(PIECE);
    for piece in pieces.by_ref().take(PIECES / 4) {
        f.write_all(piece).expect("write before the stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hung = 1;
    c.signal_chunkserver(hung, libc::SIGSTOP);
    let stopped = Instant::now();
    for piece in pieces {
        f.write_all(piece).expect("write after the stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.sync_all().expect("fsync with a chain member hung");
    drop(f);
    let took = stopped.elapsed();
    c.signal_chunkserver(hung, libc::SIGCONT);
    // Some 10 s for the data connection's keep-alive, against at least 20 s with the
    // keep-alive of the other connections.
    assert!(
        took < Duration::from_secs(16),
        "the write waited {took:?} for the hung chain member"
    );
    let got = fs::read(c.mount().join("f")).expect("read back");
    assert_same_bytes(&got, &content, "written while a chain member hung");
    c.assert_daemons_alive("a chain member hung during a write");
}

#[test]
fn a_read_goes_to_another_copy_when_the_first_server_hangs() {
    let c = cluster(2);
    let content = Rng::new("hung read").bytes(12 << 20);
    let file = {
        let m = c.mount();
        fs::write(m.join("f"), &content).expect("write");
        ino(&m.join("f"))
    };
    let first = read_locations(&c.master_addr(), file, 0).expect("locations")[0].clone();
    let hung = c
        .chunkserver_index(&first)
        .expect("a chunkserver of the cluster");
    c.signal_chunkserver(hung, libc::SIGSTOP);
    // A fresh mount: nothing cached, the read starts at the master's first copy.
    let m = c.mount();
    let start = Instant::now();
    let got = fs::read(m.join("f")).expect("read with the first copy's server hung");
    let took = start.elapsed();
    c.signal_chunkserver(hung, libc::SIGCONT);
    assert_same_bytes(&got, &content, "read with one copy's server hung");
    assert!(
        took < HUNG_CONNECTION_NOTICED,
        "the read waited {took:?} for the hung server"
    );
}

#[test]
fn deletions_on_the_other_servers_go_on_while_one_server_hangs() {
    const FILES: usize = 12;
    let c = cluster(3);
    let m = c.mount();
    for i in 0..FILES {
        fs::write(m.join(format!("f{i}")), vec![i as u8; 1000]).expect("write");
    }
    c.wait_for(
        "a copy of every file on every server",
        START_TIMEOUT,
        || (0..3).all(|s| c.chunk_files(s).len() == FILES),
    );
    let hung = 1;
    c.signal_chunkserver(hung, libc::SIGSTOP);
    let stopped = Instant::now();
    // Each unlink apart from the others: one deletion order per file to every server,
    // more orders than the master once sent at a time.
    for i in 0..FILES {
        fs::remove_file(m.join(format!("f{i}"))).expect("unlink");
        std::thread::sleep(Duration::from_millis(150));
    }
    c.wait_for(
        "the copies on the healthy servers deleted",
        START_TIMEOUT,
        || c.chunk_files(0).is_empty() && c.chunk_files(2).is_empty(),
    );
    let took = stopped.elapsed();
    c.signal_chunkserver(hung, libc::SIGCONT);
    // HTTP/2 keep-alive gives up on the hung connection at the earliest 10 s after the
    // stop; deletions done before then did not wait for it.
    assert!(
        took < Duration::from_secs(9),
        "the healthy servers' deletions waited {took:?} for the hung server"
    );
    c.wait_for(
        "the hung server's copies deleted once it runs again",
        START_TIMEOUT,
        || c.chunk_files(hung).is_empty(),
    );
    c.assert_daemons_alive("a chunkserver hung while files were deleted");
}

/// A hole filled while the only server hangs: the master hands the new chunk out at once
/// and its create order times out. Until the write ends, the hole reads as zeros through
/// another mount, without waiting for the hung server. Once the server wakes, the write
/// lands: its ack proves the copy the failed order left suspect, so the copy is kept, also
/// when the server registers again.
#[test]
fn a_hole_filled_while_its_server_hangs_reads_as_zeros_then_as_written() {
    const AT: u64 = 1 << 20;
    let c = Cluster::start(Opts {
        chunkservers: 1,
        root_goal: Some(1),
        master_config: "chunkserver_timeout_secs = 300\n".to_owned(),
        ..Opts::default()
    });
    let writer = c.mount();
    let reader = c.mount();
    let path = writer.join("f");
    fs::File::create(&path)
        .and_then(|f| f.set_len(3 << 20))
        .expect("a file that is all hole");
    let data = Rng::new("hole filled while hung").bytes(100_000);
    c.signal_chunkserver(0, libc::SIGSTOP);
    let write = {
        let (path, data) = (path.clone(), data.clone());
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(&path)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &data, AT)?;
            f.sync_all()
        })
    };
    let log = c.log_path("master");
    c.wait_for(
        "the create order to time out",
        Duration::from_secs(10),
        || fs::read_to_string(&log).is_ok_and(|l| l.contains("chunk order failed")),
    );
    let mut hole = vec![1u8; data.len()];
    fs::File::open(reader.join("f"))
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut hole, AT))
        .expect("reading the hole while its new chunk is written");
    assert!(hole.iter().all(|&b| b == 0), "the hole read as non-zero");
    c.signal_chunkserver(0, libc::SIGCONT);
    write
        .join()
        .expect("writer thread")
        .expect("write and fsync once the server woke");
    let read = |m: &elkfs_tests::Mount| {
        let mut got = vec![0u8; data.len()];
        fs::File::open(m.join("f"))
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, AT))
            .map(|()| got)
    };
    assert!(read(&reader).expect("read after the write") == data);
    c.stop_chunkserver(0);
    c.start_chunkserver(0);
    let fresh = c.mount();
    assert!(
        read(&fresh).expect("read after the server registered again") == data,
        "the written range changed after the server registered again"
    );
}
