#!/usr/bin/env python3
"""changelog_sync.py [DIR] - what one changelog fdatasync costs on DIR's filesystem: a record
appended at the end of the file (the file grows, so the sync also commits the new size to
the journal), a record written into space zero-filled beforehand, and the same through
O_DIRECT, rewriting the whole 4 KiB block the record ends in (what the master's changelog
writer does), and that with O_DSYNC instead of a separate fdatasync. Alternates blocks of 200 syncs of 150-byte records, 30 blocks each, so all
see the same disk weather; prints median/min/max microseconds per sync."""
import mmap
import os
import statistics
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp"
RECORD = b"x" * 150
BLOCKS, PER_BLOCK = 30, 200


BLOCK = 4096


def open_log(name, zero_fill, flags=0):
    path = os.path.join(DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    if zero_fill:
        os.write(fd, b"\0" * (BLOCKS * PER_BLOCK * len(RECORD) + (1 << 20)))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    if flags:
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | flags)
    return path, fd


logs = {"append": open_log("elkfs-sync-append", False),
        "zero-filled": open_log("elkfs-sync-zeroed", True),
        "O_DIRECT": open_log("elkfs-sync-direct", True, os.O_DIRECT),
        "O_DSYNC": open_log("elkfs-sync-dsync", True, os.O_DIRECT | os.O_DSYNC)}
times = {name: [] for name in logs}
# Per direct log, page-aligned as O_DIRECT needs: the block the last record ends in, and
# the next; and where its records end.
blocks = {name: mmap.mmap(-1, 2 * BLOCK) for name in ("O_DIRECT", "O_DSYNC")}
pos = {name: 0 for name in blocks}
for _ in range(BLOCKS):
    for name, (_, fd) in logs.items():
        start = time.perf_counter()
        for _ in range(PER_BLOCK):
            if name in blocks:
                b, p = blocks[name], pos[name]
                off = p % BLOCK
                b[off:off + len(RECORD)] = RECORD
                n = BLOCK if off + len(RECORD) <= BLOCK else 2 * BLOCK
                os.pwrite(fd, memoryview(b)[:n], p - off)
                pos[name] += len(RECORD)
                if n > BLOCK:
                    b[:BLOCK] = b[BLOCK:]
                    b[BLOCK:] = bytes(BLOCK)
            else:
                os.write(fd, RECORD)
            if name != "O_DSYNC":
                os.fdatasync(fd)
        times[name].append((time.perf_counter() - start) / PER_BLOCK * 1e6)
for name, (path, fd) in logs.items():
    os.close(fd)
    os.unlink(path)
    t = times[name]
    print(f"{name:12} median {statistics.median(t):4.0f} us  min {min(t):4.0f}  max {max(t):4.0f}")
