//! A chunkserver that hangs (SIGSTOP: still connected and registered, but silent) holds
//! up only the writes already bound to it: once an order to it has timed out, new chunks
//! go to the other servers.

use elkfs_tests::fsutil::assert_same_bytes;
use elkfs_tests::{Cluster, Opts};
use std::fs;

#[test]
fn a_hung_chunkserver_gets_no_more_new_chunks() {
    let c = Cluster::start(Opts {
        chunkservers: 3,
        root_goal: Some(1),
        // The master must not drop the server for its missed heartbeats during the test:
        // what is shown is placement avoiding a server whose order timed out.
        master_config: "chunkserver_timeout_secs = 300\n".to_owned(),
        ..Opts::default()
    });
    let m = c.mount();
    let hung = 1;
    c.signal_chunkserver(hung, libc::SIGSTOP);
    let files: Vec<(String, Vec<u8>)> = (0..30u8)
        .map(|i| (format!("f{i}"), vec![i; 10_000 + usize::from(i)]))
        .collect();
    for (name, content) in &files {
        fs::write(m.join(name), content).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    c.signal_chunkserver(hung, libc::SIGCONT);
    for (name, content) in &files {
        let got = fs::read(m.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert_same_bytes(&got, content, name);
    }
    let log = fs::read_to_string(c.log_path("master")).expect("master log");
    let addr = c.chunkserver_addr(hung);
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
