#!/usr/bin/env bash
# metadata_scale.sh - elkfs-metarestore speed and master start time at N files.
#
#   bench/metadata_scale.sh              N=1000000
#   N=200000 BIN=target/release bench/metadata_scale.sh
#
# elkfs-genmeta writes an empty image plus a changelog of N Mknod records (1000 files per
# directory) with the master's own code, then:
#   1. elkfs-metarestore -a on a copy: records/s as it reports them;
#   2. elkfs-master on the raw directory: start-up = image + replay of every record (the
#      start after a crash) + writing a fresh image, until Admin.Status answers;
#   3. elkfs-master again on that directory: start-up from the image alone.
# Binaries from BIN (default target/debug, which this workspace builds optimized).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000000}
BIN=${BIN:-$REPO/target/debug}
ADDR=${ADDR:-127.0.0.77:9520}
WORK=$(mktemp -d /var/tmp/elkfs-scale.XXXXXX)
MASTER_PID=
cleanup() {
  [[ -n $MASTER_PID ]] && kill "$MASTER_PID" 2>/dev/null && wait "$MASTER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

[[ -z ${NO_BUILD:-} ]] && (cd "$REPO" && cargo build -q -p elkfs-master -p elkfs-mount -p elkfs-tests --bins)

t0=$(now)
"$BIN/elkfs-genmeta" "$WORK/raw" "$N"
echo "generated in $(secs "$t0" "$(now)") s; $(du -sh "$WORK/raw" | cut -f1) on disk"

cp -r "$WORK/raw" "$WORK/restore"
echo "--- elkfs-metarestore -a"
t0=$(now)
"$BIN/elkfs-metarestore" -a "$WORK/restore" | grep -E '^(reached|continuity)'
echo "metarestore wall time $(secs "$t0" "$(now)") s"

start_master() {
  local t0 t1
  t0=$(now)
  "$BIN/elkfs-master" --listen "$ADDR" --data-dir "$WORK/raw" >"$WORK/master.log" 2>&1 &
  MASTER_PID=$!
  until "$BIN/elkfs" status --master "$ADDR" >/dev/null 2>&1; do
    kill -0 "$MASTER_PID" || { cat "$WORK/master.log"; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  echo "master start ($1): $(secs "$t0" "$t1") s until Admin.Status answers"
  kill "$MASTER_PID"; wait "$MASTER_PID" || true; MASTER_PID=
}
echo "--- elkfs-master"
start_master "image 0 + $N records replayed, fresh image written"
start_master "from the image alone"
