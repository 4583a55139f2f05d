#!/usr/bin/env bash
# ab_meta.sh OLD_BIN NEW_BIN - create and unlink rates of two elkfs builds, side by side:
# both clusters run at once (OLD on 127.0.0.1, NEW on 127.0.0.2), and one Python loop
# alternates blocks of operations between their mounts, so both see the same machine
# weather. Differences of a few percent show here that separate runs bury in noise.
# Not for elkfs against MooseFS: MooseFS's idle chunkservers take about 14 % of a CPU at
# nice -19 (/proc, 10 s idle), which would slow whichever side runs beside them.
#
#   bench/ab_meta.sh /var/tmp/elkbin-old target/release
#   ROUNDS=5 BLOCKS=20 PER=250 GOAL=1 bench/ab_meta.sh OLD NEW
#
# Each round: BLOCKS blocks of PER creates (open O_CREAT|O_EXCL + close of an empty file)
# per cluster, alternating which goes first, then the same for unlinks. Prints each
# round's rates and NEW/OLD (>1: NEW is faster). Swap the arguments once to rule out the
# address or start order favouring one side.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
OLD=$(realpath "$1") NEW=$(realpath "$2")
ROUNDS=${ROUNDS:-3} BLOCKS=${BLOCKS:-20} PER=${PER:-250} GOAL=${GOAL:-1}
WORK=${WORK:-/var/tmp/elkfs-ab}

down() {
  for side in old new; do
    [[ -d $WORK/$side ]] && "$OLD/elkfs" down "$WORK/$side" >/dev/null 2>&1 || true
  done
}
trap down EXIT
down
rm -rf "$WORK"
"$OLD/elkfs" up "$WORK/old" "$WORK/mnt-old" --host 127.0.0.1 --goal "$GOAL" >/dev/null
"$NEW/elkfs" up "$WORK/new" "$WORK/mnt-new" --host 127.0.0.2 --goal "$GOAL" >/dev/null

for r in $(seq 1 "$ROUNDS"); do
  python3 - "$WORK/mnt-old" "$WORK/mnt-new" "$BLOCKS" "$PER" "$r" <<'PY'
import os, sys, time
old, new, blocks, per, r = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
spent = {old: {"create": 0.0, "unlink": 0.0}, new: {"create": 0.0, "unlink": 0.0}}
flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
for d in (old, new):
    os.mkdir(f"{d}/ab")
def run(kind, op):
    for b in range(blocks):
        for d in ((old, new) if b % 2 == 0 else (new, old)):
            t = time.perf_counter()
            for i in range(per):
                op(f"{d}/ab/f{b}_{i}")
            spent[d][kind] += time.perf_counter() - t
run("create", lambda p: os.close(os.open(p, flags, 0o644)))
run("unlink", os.unlink)
for d in (old, new):
    os.rmdir(f"{d}/ab")
n = blocks * per
for kind in ("create", "unlink"):
    o, w = n / spent[old][kind], n / spent[new][kind]
    print(f"round {r} {kind}: old {o:.0f}/s  new {w:.0f}/s  new/old {w / o:.3f}")
PY
done
