#!/usr/bin/env bash
# fuse_latency.sh DIR [N] - where a create and an unlink spend their time on a FUSE mount:
# N (default 2000) empty files are created (open O_CREAT|O_EXCL + close) in a new
# directory under DIR, then unlinked, while perf records the kernel's fuse tracepoints
# (Linux 6.14+). Prints, per FUSE request type, how many were sent and the median time
# from sending to answer: which requests the kernel makes per operation and which of them
# wait for a server. Run it on an elkfs and a MooseFS mount to compare them request by
# request.
#
#   bench/fuse_latency.sh /mnt/elkfs
#   bench/fuse_latency.sh /mnt/ref-mfs 5000
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 DIR [N]" >&2; exit 2; }
DIR=$1 N=${2:-2000}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 2; }
[[ $(perf list 2>/dev/null) == *fuse:fuse_request_send* ]] \
  || { echo "this kernel has no fuse tracepoints" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
perf record -q -a -e fuse:fuse_request_send -e fuse:fuse_request_end -o "$TMP/perf.data" -- \
  python3 - "$DIR/fuse-latency.$$" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
names = [f"{d}/f{i:06d}" for i in range(n)]
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
for p in names:
    os.unlink(p)
os.rmdir(d)
PY
perf script -i "$TMP/perf.data" 2>/dev/null | python3 -c '
import collections, re, statistics, sys
sent, took = {}, collections.defaultdict(list)
pattern = re.compile(r" (\d+\.\d+): +fuse:fuse_request_(send|end): connection (\d+) req (\d+)(?: opcode \d+ \((\w+)\))?")
for line in sys.stdin:
    m = pattern.search(line)
    if not m:
        continue
    key = (m[3], m[4])
    if m[2] == "send":
        sent[key] = (float(m[1]), m[5])
    elif key in sent:
        start, op = sent.pop(key)
        took[op].append((float(m[1]) - start) * 1e6)
for op, t in sorted(took.items(), key=lambda kv: -len(kv[1])):
    print(f"{op:18} {len(t):7} requests   median {statistics.median(t):7.1f} us")
'
