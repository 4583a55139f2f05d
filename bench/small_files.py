#!/usr/bin/env python3
"""small_files.py DIR [THREADS] [FILES] [SIZE] - small-file writes from parallel writers,
as an untar, a checkout or a build makes them: each of THREADS threads (default 4) creates
FILES files (default 500) of SIZE bytes (default 10000) in a directory of its own under
DIR, writing each in one call and closing it. Prints files per second over all threads.
Run it on each system under test in the same session and compare the ratio."""
import os
import shutil
import sys
import threading
import time

root = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
files = int(sys.argv[3]) if len(sys.argv) > 3 else 500
size = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
data = os.urandom(size)
work = os.path.join(root, f"small-files-{os.getpid()}")
dirs = [os.path.join(work, f"t{t}") for t in range(threads)]
for d in dirs:
    os.makedirs(d)


def writer(d):
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    for i in range(files):
        fd = os.open(os.path.join(d, f"f{i}"), flags, 0o644)
        os.write(fd, data)
        os.close(fd)


workers = [threading.Thread(target=writer, args=(d,)) for d in dirs]
start = time.perf_counter()
for w in workers:
    w.start()
for w in workers:
    w.join()
elapsed = time.perf_counter() - start
shutil.rmtree(work)
print(f"{threads} threads x {files} files of {size} B: {threads * files / elapsed:.0f} files/s")
