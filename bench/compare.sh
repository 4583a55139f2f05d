#!/usr/bin/env bash
# compare.sh - run the shared reference workload against MooseFS and elkfs back to back
# on this machine and print both tables plus elkfs/MooseFS ratios (>1 = elkfs better).
#
#   bench/compare.sh                 all tests, RUNS=2
#   TESTS="1 2 5" RUNS=1 bench/compare.sh
#   GOAL=2 bench/compare.sh          copies per chunk on both systems (default 1)
#   SKIP_MOOSEFS=1 bench/compare.sh  elkfs only (no ratios)
#   ELKFS_BIN=/tmp/old bench/compare.sh   elkfs binaries from that directory (no build), e.g.
#                                    a copy of an older target/release, for before/after runs
#   OUT=/tmp/res bench/compare.sh    results there instead of bench/results
#
# Needs ../shared/bench (the reference scripts) beside the repository. Builds elkfs in
# release mode. Everything listens on 127.0.0.1 only. Results: bench/results/<label>/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
REF=${REF:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || true)}
[[ -x $REF/workload.sh ]] || { echo "reference workload not found (set REF=.../shared/bench)" >&2; exit 2; }
export GOAL=${GOAL:-1} RUNS=${RUNS:-2}
ELK_DATA=${ELK_DATA:-/var/tmp/elkfs-bench}
ELK_MNT=${ELK_MNT:-/mnt/elkfs-bench}
OUT=${OUT:-$HERE/results}
mkdir -p "$OUT"

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -z ${ELKFS_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release --bins -q)
fi
ELKFS=${ELKFS_BIN:-$REPO/target/release}/elkfs

if [[ -z ${SKIP_MOOSEFS:-} ]]; then
  log "MooseFS (goal $GOAL)"
  "$REF/moosefs-down.sh" >/dev/null 2>&1 || true
  "$REF/moosefs-up.sh"
  OUTDIR=$OUT/moosefs REMOUNT_CMD="$REF/moosefs-down.sh --umount-only && $REF/moosefs-up.sh --mount-only" \
    "$REF/workload.sh" /mnt/ref-mfs moosefs
  "$REF/moosefs-down.sh"
fi

log "elkfs (goal $GOAL)"
"$ELKFS" down "$ELK_DATA" >/dev/null 2>&1 || true
rm -rf "$ELK_DATA"
"$ELKFS" up "$ELK_DATA" "$ELK_MNT" --chunkservers 3 --goal "$GOAL"
OUTDIR=$OUT/elkfs REMOUNT_CMD="umount $ELK_MNT && $ELKFS up $ELK_DATA $ELK_MNT --chunkservers 3 --goal $GOAL" \
  "$REF/workload.sh" "$ELK_MNT" elkfs
"$ELKFS" down "$ELK_DATA"

if [[ -z ${SKIP_MOOSEFS:-} ]]; then
  python3 "$HERE/ratio.py" "$OUT/moosefs/results.tsv" "$OUT/elkfs/results.tsv" | tee "$OUT/ratio.md"
fi
