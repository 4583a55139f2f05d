//! POSIX behaviour of a real mount: every operation and its errno cases.

use elkfs_tests::fsutil::{as_user, assert_errno, assert_same_bytes, check, cstr, errno_result};
use elkfs_tests::{Cluster, Opts};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn cluster() -> Cluster {
    Cluster::start(Opts {
        chunkservers: 2,
        ..Opts::default()
    })
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn create_open_read_write() {
    let c = cluster();
    let m = c.mount();
    let f = m.join("file");

    fs::write(&f, b"hello world").expect("create+write");
    assert_eq!(fs::read(&f).expect("read"), b"hello world");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 11);

    let mut h = OpenOptions::new()
        .append(true)
        .open(&f)
        .expect("open append");
    h.write_all(b"!").expect("append");
    drop(h);
    assert_eq!(fs::read(&f).expect("read"), b"hello world!");

    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .expect("open rw");
    h.write_all_at(b"HELLO", 0).expect("pwrite");
    let mut buf = [0u8; 5];
    h.read_exact_at(&mut buf, 6).expect("pread");
    assert_eq!(&buf, b"world");
    drop(h);
    assert_eq!(fs::read(&f).expect("read"), b"HELLO world!");

    // O_TRUNC empties, O_EXCL refuses an existing name.
    File::create(&f).expect("truncating open");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 0);
    assert_errno(
        OpenOptions::new().write(true).create_new(true).open(&f),
        libc::EEXIST,
        "O_CREAT|O_EXCL on an existing file",
    );
    assert_errno(File::open(m.join("missing")), libc::ENOENT, "open missing");
    assert_errno(
        File::open(m.join("missing/deeper")),
        libc::ENOENT,
        "open under missing dir",
    );
    assert_errno(
        File::open(m.join("file/below")),
        libc::ENOTDIR,
        "open below a file",
    );
    fs::create_dir(m.join("d")).expect("mkdir");
    assert_errno(
        OpenOptions::new().write(true).open(m.join("d")),
        libc::EISDIR,
        "open dir for writing",
    );

    // Reading past EOF gives 0 bytes; a read-only handle refuses writes.
    let mut r = File::open(&f).expect("open");
    let mut rest = Vec::new();
    r.seek(SeekFrom::Start(100)).expect("seek");
    assert_eq!(r.read_to_end(&mut rest).expect("read past eof"), 0);
    assert_errno(r.write(b"x"), libc::EBADF, "write on O_RDONLY");
}

#[test]
fn directories() {
    let c = cluster();
    let m = c.mount();
    let d = m.join("d");
    fs::create_dir(&d).expect("mkdir");
    assert!(fs::metadata(&d).expect("stat").is_dir());
    assert_errno(fs::create_dir(&d), libc::EEXIST, "mkdir existing");
    fs::write(d.join("f"), b"x").expect("create in dir");
    fs::create_dir(d.join("sub")).expect("mkdir sub");
    assert_eq!(
        fs::metadata(&d).expect("stat").nlink(),
        3,
        "dir nlink = 2 + subdirs"
    );

    assert_errno(fs::remove_dir(&d), libc::ENOTEMPTY, "rmdir non-empty");
    assert_errno(fs::remove_dir(d.join("f")), libc::ENOTDIR, "rmdir a file");
    assert_errno(fs::remove_file(d.join("sub")), libc::EISDIR, "unlink a dir");
    assert_errno(
        fs::create_dir(d.join("f/x")),
        libc::ENOTDIR,
        "mkdir below a file",
    );
    assert_errno(
        fs::remove_dir(m.join("nope")),
        libc::ENOENT,
        "rmdir missing",
    );
    assert_errno(
        fs::remove_file(m.join("nope")),
        libc::ENOENT,
        "unlink missing",
    );

    // Listing many entries exercises readdir paging.
    let many = m.join("many");
    fs::create_dir(&many).expect("mkdir many");
    for i in 0..600 {
        File::create(many.join(format!("entry-{i:04}"))).expect("create entry");
    }
    let mut names: Vec<String> = fs::read_dir(&many)
        .expect("readdir")
        .map(|e| e.expect("dirent").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    let want: Vec<String> = (0..600).map(|i| format!("entry-{i:04}")).collect();
    assert_eq!(names, want, "readdir lists every entry exactly once");

    fs::remove_file(d.join("f")).expect("unlink");
    fs::remove_dir(d.join("sub")).expect("rmdir sub");
    fs::remove_dir(&d).expect("rmdir");
    assert_errno(fs::metadata(&d), libc::ENOENT, "stat removed dir");
}

/// The names a directory stream gives from where it stands to its end.
fn read_to_end(dir: *mut libc::DIR) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        // SAFETY: `dir` is an open stream; the entry is read before the next call.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            return names;
        }
        // SAFETY: readdir returned a valid entry with a NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        names.push(name.to_string_lossy().into_owned());
    }
}

#[test]
fn a_listing_ends_and_starts_again_when_rewound() {
    let c = cluster();
    let m = c.mount();
    let d = m.join("listed");
    fs::create_dir(&d).expect("mkdir");
    fs::write(d.join("a"), b"").expect("create a");
    let path = cstr(&d);
    // SAFETY: a valid C string; the stream is closed below.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    assert!(
        !dir.is_null(),
        "opendir: {}",
        std::io::Error::last_os_error()
    );
    let mut first = read_to_end(dir);
    first.sort();
    assert_eq!(first, [".", "..", "a"]);
    assert!(
        read_to_end(dir).is_empty(),
        "a listing at its end stays there"
    );

    fs::write(d.join("b"), b"").expect("create b");
    // SAFETY: `dir` is open.
    unsafe { libc::rewinddir(dir) };
    let mut again = read_to_end(dir);
    again.sort();
    assert_eq!(
        again,
        [".", "..", "a", "b"],
        "a rewound listing shows new names"
    );
    // SAFETY: `dir` is open and not used after this.
    assert_eq!(unsafe { libc::closedir(dir) }, 0);
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<libc::c_int> {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

#[test]
fn rename() {
    let c = cluster();
    let m = c.mount();
    fs::create_dir(m.join("a")).expect("mkdir a");
    fs::create_dir(m.join("b")).expect("mkdir b");
    fs::write(m.join("a/f"), b"one").expect("write");
    let ino = fs::metadata(m.join("a/f")).expect("stat").ino();

    fs::rename(m.join("a/f"), m.join("b/g")).expect("rename across dirs");
    assert_errno(fs::metadata(m.join("a/f")), libc::ENOENT, "old name gone");
    let moved = fs::metadata(m.join("b/g")).expect("stat new name");
    assert_eq!(moved.ino(), ino, "rename keeps the inode");
    assert_eq!(fs::read(m.join("b/g")).expect("read"), b"one");

    // Replacing an existing target.
    fs::write(m.join("a/h"), b"two").expect("write");
    fs::rename(m.join("a/h"), m.join("b/g")).expect("rename over existing");
    assert_eq!(fs::read(m.join("b/g")).expect("read"), b"two");
    assert_errno(fs::metadata(m.join("a/h")), libc::ENOENT, "source gone");

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(m.join("a/x"), b"x").expect("write");
    fs::write(m.join("a/y"), b"y").expect("write");
    assert_errno(
        renameat2(&m.join("a/x"), &m.join("a/y"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto existing",
    );
    assert_eq!(
        fs::read(m.join("a/y")).expect("read"),
        b"y",
        "target untouched"
    );
    renameat2(&m.join("a/x"), &m.join("a/z"), libc::RENAME_NOREPLACE)
        .expect("NOREPLACE to new name");
    renameat2(&m.join("a/z"), &m.join("b"), libc::RENAME_EXCHANGE).expect("exchange file and dir");
    assert!(
        fs::metadata(m.join("a/z")).expect("stat").is_dir(),
        "dir now at a/z"
    );
    assert_eq!(fs::read(m.join("b")).expect("read"), b"x", "file now at b");
    assert_eq!(
        fs::read(m.join("a/z/g")).expect("read"),
        b"two",
        "dir content moved along"
    );
    assert_errno(
        renameat2(&m.join("a/y"), &m.join("a/none"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
        "exchange with a missing target",
    );

    // Directory cases.
    fs::create_dir_all(m.join("p/q")).expect("mkdir -p");
    fs::create_dir(m.join("full")).expect("mkdir");
    fs::write(m.join("full/f"), b"").expect("create");
    assert_errno(
        fs::rename(m.join("p"), m.join("p/q/r")),
        libc::EINVAL,
        "dir into own subdir",
    );
    assert_errno(
        fs::rename(m.join("p"), m.join("full")),
        libc::ENOTEMPTY,
        "dir over non-empty dir",
    );
    assert_errno(
        fs::rename(m.join("a/y"), m.join("p")),
        libc::EISDIR,
        "file over dir",
    );
    assert_errno(
        fs::rename(m.join("p"), m.join("a/y")),
        libc::ENOTDIR,
        "dir over file",
    );
    assert_errno(
        fs::rename(m.join("nope"), m.join("x")),
        libc::ENOENT,
        "missing source",
    );
    fs::create_dir(m.join("empty")).expect("mkdir");
    fs::rename(m.join("p"), m.join("empty")).expect("dir over empty dir");
    assert!(fs::metadata(m.join("empty/q")).expect("stat").is_dir());
    // Directories left in the root: a, full, empty (p renamed over it); b became a file in
    // the exchange.
    assert_eq!(
        fs::metadata(m.path()).expect("stat root").nlink(),
        2 + 3,
        "root nlink"
    );
}

#[test]
fn links_and_symlinks() {
    let c = cluster();
    let m = c.mount();
    fs::write(m.join("f"), b"data").expect("write");
    fs::hard_link(m.join("f"), m.join("g")).expect("link");
    let (f, g) = (
        fs::metadata(m.join("f")).expect("stat"),
        fs::metadata(m.join("g")).expect("stat"),
    );
    assert_eq!(f.ino(), g.ino());
    assert_eq!(f.nlink(), 2);
    fs::remove_file(m.join("f")).expect("unlink one name");
    assert_eq!(fs::metadata(m.join("g")).expect("stat").nlink(), 1);
    assert_eq!(fs::read(m.join("g")).expect("read"), b"data");
    assert_errno(
        fs::hard_link(m.join("g"), m.join("g")),
        libc::EEXIST,
        "link onto existing",
    );
    fs::create_dir(m.join("d")).expect("mkdir");
    assert_errno(
        fs::hard_link(m.join("d"), m.join("d2")),
        libc::EPERM,
        "hard link to dir",
    );

    std::os::unix::fs::symlink("g", m.join("s")).expect("symlink");
    assert_eq!(
        fs::read_link(m.join("s")).expect("readlink"),
        Path::new("g")
    );
    assert!(fs::symlink_metadata(m.join("s"))
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(fs::symlink_metadata(m.join("s")).expect("lstat").len(), 1);
    assert_eq!(
        fs::read(m.join("s")).expect("read through symlink"),
        b"data"
    );
    let long_target = "t".repeat(4000);
    std::os::unix::fs::symlink(&long_target, m.join("long")).expect("long symlink");
    assert_eq!(
        fs::read_link(m.join("long")).expect("readlink").to_str(),
        Some(&*long_target)
    );
    std::os::unix::fs::symlink("nowhere", m.join("dangling")).expect("dangling symlink");
    assert_errno(
        fs::read(m.join("dangling")),
        libc::ENOENT,
        "follow dangling symlink",
    );
    assert_errno(
        fs::read_link(m.join("g")),
        libc::EINVAL,
        "readlink on a file",
    );
    assert_errno(
        std::os::unix::fs::symlink("x", m.join("g")),
        libc::EEXIST,
        "symlink over existing",
    );
}

/// The link count a node shows through its other name right after an unlink or a
/// rename over it. Repeated because a stale answer used to depend on whether the master's
/// notice beat the next stat (about 1 round in 40).
#[test]
fn a_node_that_loses_a_name_shows_its_new_link_count() {
    let c = cluster();
    let m = c.mount();
    let nlink = |name: &str| fs::metadata(m.join(name)).expect("stat").nlink();
    for i in 0..100 {
        let (f, g, h, k) = (
            format!("f{i}"),
            format!("g{i}"),
            format!("h{i}"),
            format!("k{i}"),
        );
        fs::write(m.join(&f), b"").expect("create");
        fs::hard_link(m.join(&f), m.join(&g)).expect("link");
        assert_eq!((nlink(&f), nlink(&g)), (2, 2));
        fs::remove_file(m.join(&f)).expect("unlink");
        assert_eq!(nlink(&g), 1, "round {i}: after unlinking its other name");

        fs::write(m.join(&h), b"").expect("create");
        fs::hard_link(m.join(&h), m.join(&k)).expect("link");
        assert_eq!(nlink(&h), 2);
        fs::rename(m.join(&g), m.join(&h)).expect("rename over a linked file");
        assert_eq!(
            nlink(&k),
            1,
            "round {i}: after a rename over its other name"
        );
    }
}

#[test]
fn special_nodes() {
    let c = cluster();
    let m = c.mount();
    let (fifo, sock, chr) = (
        cstr(&m.join("fifo")),
        cstr(&m.join("sock")),
        cstr(&m.join("null")),
    );
    // SAFETY: valid C strings.
    unsafe {
        check(libc::mkfifo(fifo.as_ptr(), 0o644)).expect("mkfifo");
        check(libc::mknod(sock.as_ptr(), libc::S_IFSOCK | 0o644, 0)).expect("mknod socket");
        check(libc::mknod(
            chr.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        ))
        .expect("mknod chr");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(m.join("fifo"))
        .expect("stat")
        .file_type()
        .is_fifo());
    assert!(fs::metadata(m.join("sock"))
        .expect("stat")
        .file_type()
        .is_socket());
    let dev = fs::metadata(m.join("null")).expect("stat");
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3), "rdev survives");
    // SAFETY: valid C string.
    assert_errno(
        check(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }),
        libc::EEXIST,
        "mkfifo existing",
    );
}

fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> std::io::Result<libc::c_int> {
    let c = cstr(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid C string and a 2-element array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) })
}

#[test]
fn attributes() {
    let c = cluster();
    let m = c.mount();
    let f = m.join("f");
    fs::write(&f, b"0123456789").expect("write");

    chmod(&f, 0o640);
    assert_eq!(mode_of(&f) & 0o7777, 0o640);
    chmod(&f, 0o4755);
    assert_eq!(mode_of(&f) & 0o7777, 0o4755, "setuid bit kept by chmod");
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).expect("chown");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mode() & 0o4000, 0, "chown clears setuid");

    // truncate shrinks and grows (the new part reads as zeros).
    OpenOptions::new()
        .write(true)
        .open(&f)
        .expect("open")
        .set_len(4)
        .expect("ftruncate");
    assert_eq!(fs::read(&f).expect("read"), b"0123");
    OpenOptions::new()
        .write(true)
        .open(&f)
        .expect("open")
        .set_len(8)
        .expect("ftruncate up");
    assert_eq!(fs::read(&f).expect("read"), b"0123\0\0\0\0");
    let c_f = cstr(&f);
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(c_f.as_ptr(), 2) }).expect("truncate");
    assert_eq!(fs::read(&f).expect("read"), b"01");

    // Nanoseconds, before 1970 and after 2106 (beyond u32 seconds).
    for (sec, nsec) in [
        (1_234_567_890, 123_456_789),
        (-1_000_000_001, 5),
        (5_000_000_000, 999_999_999),
    ] {
        set_times(&f, (sec + 1, nsec), (sec, nsec)).expect("utimensat");
        let md = fs::metadata(&f).expect("stat");
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (sec, nsec),
            "mtime {sec}.{nsec}"
        );
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (sec + 1, nsec),
            "atime {sec}.{nsec}"
        );
    }
    // ctime moves on metadata changes.
    let ctime = |md: &fs::Metadata| (md.ctime(), md.ctime_nsec());
    let before = ctime(&fs::metadata(&f).expect("stat"));
    std::thread::sleep(Duration::from_millis(20));
    chmod(&f, 0o600);
    assert!(
        ctime(&fs::metadata(&f).expect("stat")) > before,
        "chmod updates ctime"
    );
    assert_errno(
        set_times(&m.join("nope"), (0, 0), (0, 0)),
        libc::ENOENT,
        "utimensat missing",
    );
}

/// `utimensat` on a file with buffered writes (what `cp -a` does before close): the times
/// hold before and after close, on another mount and after kill -9 of the master, whether
/// they went with the flush's WriteEnd (one chunk) or a SetAttr after it (two chunks). A
/// write after them sets mtime again.
#[test]
fn times_set_on_unflushed_writes() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let c = cluster();
    let started = SystemTime::now();
    let at = |sec, nsec| UNIX_EPOCH + Duration::new(sec, nsec);
    let (atime, mtime) = (at(1_400_000_000, 5), at(1_500_000_000, 987_654_321));
    let times = fs::FileTimes::new().set_accessed(atime).set_modified(mtime);
    let stamps = |p: &Path| {
        let md = fs::metadata(p).expect("stat");
        (
            md.len(),
            md.accessed().expect("atime"),
            md.modified().expect("mtime"),
        )
    };
    let small = (b"small file".len() as u64, atime, mtime);
    let far = 64 << 20;
    let big = (far + 3, atime, mtime);
    {
        let m = c.mount();
        let mut f = File::create(m.join("small")).expect("create");
        f.write_all(b"small file").expect("write");
        f.set_times(times).expect("futimens");
        assert_eq!(stamps(&m.join("small")), small, "before close");
        drop(f);
        assert_eq!(stamps(&m.join("small")), small, "after close");

        let f = File::create(m.join("two-chunks")).expect("create");
        f.write_all_at(b"abc", 0).expect("write chunk 0");
        f.write_all_at(b"abc", far).expect("write chunk 1");
        f.set_times(times).expect("futimens");
        drop(f);
        assert_eq!(stamps(&m.join("two-chunks")), big);

        let mut f = File::create(m.join("rewritten")).expect("create");
        f.write_all(b"x").expect("write");
        f.set_times(times).expect("futimens");
        f.write_all(b"y").expect("write after setting times");
        drop(f);
        let (len, _, modified) = stamps(&m.join("rewritten"));
        assert_eq!(len, 2);
        assert!(modified >= started, "a later write sets mtime again");

        let other = c.mount();
        assert_eq!(stamps(&other.join("small")), small, "other mount");
        assert_eq!(stamps(&other.join("two-chunks")), big, "other mount");
    }
    c.kill_master();
    c.start_master();
    let m = c.mount();
    assert_eq!(
        stamps(&m.join("small")),
        small,
        "after kill -9 of the master"
    );
    assert_eq!(
        stamps(&m.join("two-chunks")),
        big,
        "after kill -9 of the master"
    );
}

#[test]
fn names_and_statfs() {
    let c = cluster();
    let m = c.mount();
    let ok = "n".repeat(255);
    fs::write(m.join(&ok), b"x").expect("255-byte name");
    assert_eq!(fs::read(m.join(&ok)).expect("read"), b"x");
    let long = "n".repeat(256);
    assert_errno(
        File::create(m.join(&long)),
        libc::ENAMETOOLONG,
        "create 256-byte name",
    );
    assert_errno(
        fs::create_dir(m.join(&long)),
        libc::ENAMETOOLONG,
        "mkdir 256-byte name",
    );
    assert_errno(
        fs::metadata(m.join(&long)),
        libc::ENAMETOOLONG,
        "lookup 256-byte name",
    );
    fs::write(m.join("ünïcødé ✓"), b"u").expect("utf-8 name");
    assert!(fs::read_dir(m.path())
        .expect("readdir")
        .any(|e| e.expect("dirent").file_name() == "ünïcødé ✓"));

    let root = cstr(m.path());
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(root.as_ptr(), &mut st) }).expect("statvfs");
    assert!(st.f_blocks > 0, "statfs reports capacity");
    assert!(st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_blocks);
    assert!(
        st.f_namemax == 255 || st.f_namemax == 0,
        "namemax {}",
        st.f_namemax
    );
}

/// Extended attributes are not supported: every xattr call fails with EOPNOTSUPP, and the
/// mount logs no warning for them.
#[test]
fn extended_attributes_are_not_supported() {
    let c = cluster();
    let m = c.mount();
    let f = m.join("file");
    File::create(&f).expect("create");
    let (path, name) = (cstr(&f), c"user.test");
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer of the length given, for every call.
    unsafe {
        let set = libc::setxattr(path.as_ptr(), name.as_ptr(), buf.as_ptr().cast(), 1, 0);
        assert_eq!(errno_result(set as isize), libc::EOPNOTSUPP, "setxattr");
        let get = libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!(errno_result(get), libc::EOPNOTSUPP, "getxattr");
        let list = libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!(errno_result(list), libc::EOPNOTSUPP, "listxattr");
        let remove = libc::removexattr(path.as_ptr(), name.as_ptr());
        assert_eq!(
            errno_result(remove as isize),
            libc::EOPNOTSUPP,
            "removexattr"
        );
    }
    let log = fs::read_to_string(m.log_path()).expect("mount log");
    assert!(!log.contains("Not Implemented"), "mount log:\n{log}");
}

/// A plain `umount` ends the mount daemon by itself, with exit status 0 and no warning or
/// error in its log (fuser's own unmount-on-drop used to warn of a failed unmount).
#[test]
fn a_plain_umount_ends_the_mount_quietly() {
    let c = cluster();
    let m = c.mount();
    // No open files: a release the kernel sends on its own may be answered after the
    // unmount, which fuser logs as an error.
    fs::create_dir(m.join("dir")).expect("mkdir");
    assert!(fs::metadata(m.join("dir")).expect("stat").is_dir());
    let log = m.log_path();
    m.unmount();
    let log = fs::read_to_string(log).expect("mount log");
    assert!(log.contains("unmounted"), "mount log:\n{log}");
    assert!(
        !log.contains(" WARN ") && !log.contains(" ERROR "),
        "mount log:\n{log}"
    );
}

#[test]
fn unlinked_open_file_stays_usable() {
    let c = cluster();
    let m = c.mount();
    let p = m.join("tmpfile");
    let mut h = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("create");
    h.write_all(b"before unlink;").expect("write");
    fs::remove_file(&p).expect("unlink while open");
    assert_errno(fs::metadata(&p), libc::ENOENT, "name gone");
    h.write_all(b" after unlink").expect("write after unlink");
    h.sync_all().expect("fsync after unlink");
    let mut back = String::new();
    h.seek(SeekFrom::Start(0)).expect("seek");
    h.read_to_string(&mut back).expect("read after unlink");
    assert_eq!(back, "before unlink; after unlink");
    assert_eq!(h.metadata().expect("fstat").nlink(), 0);
    let chunk_files = || (0..2).map(|i| c.chunk_files(i).len()).sum::<usize>();
    assert!(chunk_files() > 0, "the open unlinked file keeps its chunk");
    drop(h);
    // The mount tells the master of closes in batches; the last one frees the chunk.
    c.wait_for(
        "the chunk of the closed unlinked file deleted",
        Duration::from_secs(20),
        || chunk_files() == 0,
    );
    // A new file under the same name is a different, empty file.
    fs::write(&p, b"").expect("recreate");
    assert_eq!(fs::metadata(&p).expect("stat").len(), 0);
}

#[test]
fn holes_read_as_zeros() {
    let c = cluster();
    let m = c.mount();
    let p = m.join("sparse");
    let h = File::create(&p).expect("create");
    let at = 5 << 20;
    h.write_all_at(b"tail", at).expect("write after a hole");
    // Past the first chunk: chunk 0 stays a hole entirely.
    let far = (64 << 20) + 100;
    h.write_all_at(b"far", far).expect("write in chunk 1");
    drop(h);
    let data = fs::read(&p).expect("read");
    assert_eq!(data.len() as u64, far + 3);
    let mut want = vec![0u8; data.len()];
    want[at as usize..at as usize + 4].copy_from_slice(b"tail");
    want[far as usize..].copy_from_slice(b"far");
    assert_same_bytes(&data, &want, "sparse file");

    let q = m.join("extended");
    fs::write(&q, b"abc").expect("write");
    OpenOptions::new()
        .write(true)
        .open(&q)
        .expect("open")
        .set_len(1 << 20)
        .expect("extend");
    let data = fs::read(&q).expect("read");
    assert_eq!(&data[..3], b"abc");
    assert!(
        data[3..].iter().all(|&b| b == 0),
        "extension reads as zeros"
    );
}

const USER: u32 = 1000;
const OTHER: u32 = 1001;

#[test]
fn permissions_as_non_root() {
    let c = cluster();
    let m = c.mount();
    chmod(m.path(), 0o755);

    // Setup by root.
    let secret = m.join("secret");
    fs::write(&secret, b"root only").expect("write");
    chmod(&secret, 0o600);
    let private_dir = m.join("private");
    fs::create_dir(&private_dir).expect("mkdir");
    chmod(&private_dir, 0o755);
    let shared = m.join("shared");
    fs::create_dir(&shared).expect("mkdir");
    chmod(&shared, 0o1777);
    let suid = m.join("suid");
    fs::write(&suid, b"x").expect("write");
    chmod(&suid, 0o4777);

    let (c_secret, c_new, c_shared_f, c_suid, c_own) = (
        cstr(&secret),
        cstr(&private_dir.join("new")),
        cstr(&shared.join("theirs")),
        cstr(&suid),
        cstr(&shared.join("mine")),
    );
    // SAFETY (all closures): raw syscalls on prepared C strings in the forked child.
    let r = as_user(USER, USER, || unsafe {
        errno_result(libc::open(c_secret.as_ptr(), libc::O_RDONLY) as isize)
    });
    assert_eq!(r, libc::EACCES, "reading another user's 0600 file");
    let r = as_user(USER, USER, || unsafe {
        errno_result(libc::open(c_new.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) as isize)
    });
    assert_eq!(r, libc::EACCES, "creating in another user's 0755 dir");
    let r = as_user(USER, USER, || unsafe {
        errno_result(libc::chmod(c_secret.as_ptr(), 0o666) as isize)
    });
    assert_eq!(r, libc::EPERM, "chmod of another user's file");

    // Files created by a user belong to that user.
    let r = as_user(USER, USER, || unsafe {
        errno_result(libc::open(c_own.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) as isize)
    });
    assert_eq!(r, 0, "creating in a 1777 dir");
    let md = fs::metadata(shared.join("mine")).expect("stat");
    assert_eq!(
        (md.uid(), md.gid()),
        (USER, USER),
        "owner is the creating user"
    );

    // Sticky directory: only the owner may delete.
    let r = as_user(OTHER, OTHER, || unsafe {
        errno_result(
            libc::open(c_shared_f.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o666) as isize,
        )
    });
    assert_eq!(r, 0, "other user creates a file in the sticky dir");
    let r = as_user(USER, USER, || unsafe {
        errno_result(libc::unlink(c_shared_f.as_ptr()) as isize)
    });
    assert_eq!(
        r,
        libc::EPERM,
        "deleting another user's file in a sticky dir"
    );
    assert!(shared.join("theirs").exists(), "file survived");
    let r = as_user(OTHER, OTHER, || unsafe {
        errno_result(libc::unlink(c_shared_f.as_ptr()) as isize)
    });
    assert_eq!(r, 0, "owner deletes own file in sticky dir");

    // A write by someone other than the owner clears setuid.
    let r = as_user(USER, USER, || unsafe {
        let fd = libc::open(c_suid.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return errno_result(-1);
        }
        errno_result(libc::write(fd, b"y".as_ptr().cast(), 1))
    });
    assert_eq!(r, 0, "non-owner writes a 04777 file");
    assert_eq!(
        mode_of(&suid) & 0o4000,
        0,
        "setuid cleared by a non-owner's write"
    );
    assert_eq!(fs::read(&suid).expect("read"), b"y");
}
