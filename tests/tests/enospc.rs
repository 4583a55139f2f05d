//! A chunkserver below its reserve takes no new data: clean ENOSPC, existing files intact.

use elkfs_tests::fsutil::{assert_same_bytes, cstr, Rng};
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File};
use std::io::Write;

fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn full_chunkserver_gives_enospc_and_keeps_data() {
    let c = Cluster::start(Opts {
        chunkservers: 1,
        ..Opts::default()
    });
    let mut rng = Rng::new("enospc");
    let existing = rng.bytes(3 << 20);
    {
        let m = c.mount();
        write_file(&m.join("existing"), &existing).expect("write with normal reserve");
    }

    // Reserve more than the disk has free: the server must refuse every new chunk.
    let dir = cstr(&c.chunkserver_data_dir(0));
    // SAFETY: zeroed statvfs is a valid out-parameter; dir is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(dir.as_ptr(), &mut st) },
        0,
        "statvfs"
    );
    let free = st.f_bavail * st.f_frsize;
    c.stop_chunkserver(0);
    c.set_reserve_bytes(0, free.saturating_mul(2).saturating_add(1 << 40));
    c.start_chunkserver(0);

    let m = c.mount();
    let err = write_file(&m.join("new"), &rng.bytes(1 << 20))
        .expect_err("writing a new file to a full cluster must fail");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "error: {err}");
    let got = fs::read(m.join("existing")).expect("existing file still readable");
    assert_same_bytes(&got, &existing, "existing file after ENOSPC");
    drop(m);

    // Space back: writes work again.
    c.stop_chunkserver(0);
    c.set_reserve_bytes(0, Opts::default().reserve_bytes);
    c.start_chunkserver(0);
    let m = c.mount();
    let again = rng.bytes(1 << 20);
    write_file(&m.join("after"), &again).expect("write once space is back");
    assert_same_bytes(
        &fs::read(m.join("after")).expect("read"),
        &again,
        "file written after ENOSPC",
    );
}
