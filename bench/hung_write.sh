#!/usr/bin/env bash
# hung_write.sh - what one hung chunkserver costs a writer: elkfs vs MooseFS 3.0, measured the
# same way on the same machine in the same run.
#
#   bench/hung_write.sh                  400 MiB, goal 3, 3 chunkservers, both systems
#   SIZE_MIB=200 GOAL=2 bench/hung_write.sh
#   SKIP_MOOSEFS=1 bench/hung_write.sh   elkfs only
#   ELKFS_BIN=DIR bench/hung_write.sh    elkfs binaries from DIR (no build)
#
# Method (identical for both): `dd bs=1M conv=fsync` of SIZE_MIB from a file in the page
# cache to a new file on the mount; STOP_AFTER seconds (0.3) into it, chunkserver N gets
# SIGSTOP (still connected and registered, but silent: a hung process or a host that stopped
# answering without resetting its connections). Once dd has returned it gets SIGCONT, and
# the file is compared with its source. Each server is stopped in turn, after a round with
# no stop. A hung server is one of every chain at goal 3 on 3 servers.
#
# elkfs also prints which servers its mount blamed for failed chain writes ("failed=[...]"
# in its log: server ids, mapped to addresses below the table). Everything listens on
# 127.0.0.0/8 only.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
REF=${REF:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd || true)}
SIZE_MIB=${SIZE_MIB:-400}
GOAL=${GOAL:-3}
STOP_AFTER=${STOP_AFTER:-0.3}
WORK=${WORK:-/var/tmp/elkfs-hung}
ELK_MNT=${ELK_MNT:-/mnt/elkfs-hung}
export REF_MFS_BASE=${REF_MFS_BASE:-/var/tmp/ref-mfs-hung}
export REF_MFS_MNT=${REF_MFS_MNT:-/mnt/ref-mfs-hung}
SRC=$WORK.src

log() { printf '[hung %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -z ${ELKFS_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release --bins -q)
  ELKFS_BIN=$REPO/target/release
fi
ELKFS=$ELKFS_BIN/elkfs

# round SYSTEM MNT PID|- : one timed write; prints a table row.
round() {
  local sys=$1 mnt=$2 pid=$3 name f start took same
  name=${4:-none}
  f=$mnt/hung-$RANDOM
  if [[ $pid != - ]]; then (sleep "$STOP_AFTER"; kill -STOP "$pid") & fi
  start=$(date +%s.%N)
  dd if="$SRC" of="$f" bs=1M conv=fsync status=none
  took=$(echo "$(date +%s.%N) - $start" | bc)
  wait
  if [[ $pid != - ]]; then kill -CONT "$pid"; fi
  same=$(cmp -s "$SRC" "$f" && echo yes || echo NO)
  rm -f "$f"
  printf '| %s | %s | %.1f | %s |' "$sys" "$name" "$took" "$same"
}

dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" status=none
echo "| system | stopped | dd s | content intact | elkfs: servers blamed |"
echo "|---|---|---|---|---|"

if [[ -z ${SKIP_MOOSEFS:-} ]]; then
  [[ -x $REF/moosefs-up.sh ]] || { echo "reference scripts not found (set REF=.../shared/bench)" >&2; exit 2; }
  log "MooseFS (goal $GOAL)"
  GOAL=$GOAL "$REF/moosefs-up.sh" >/dev/null 2>&1
  echo "$(round MooseFS "$REF_MFS_MNT" -) |"
  for i in 1 2 3; do
    echo "$(round MooseFS "$REF_MFS_MNT" "$(<"$REF_MFS_BASE/run/mfscs$i.pid")" "cs$i") |"
    sleep 5
  done
  "$REF/moosefs-down.sh" >/dev/null 2>&1
fi

log "elkfs (goal $GOAL)"
"$ELKFS" down "$WORK" >/dev/null 2>&1 || true
rm -rf "$WORK"
mkdir -p "$ELK_MNT"
servers=$("$ELKFS" up "$WORK" "$ELK_MNT" --chunkservers 3 --goal "$GOAL" | grep '^cs' | awk '{print $1, $4}' | paste -sd';' -)
echo "$(round elkfs "$ELK_MNT" -) |"
for i in 1 2 3; do
  before=$(wc -l <"$WORK/log/mount.log")
  row=$(round elkfs "$ELK_MNT" "$(<"$WORK/run/cs$i.pid")" "cs$i")
  blamed=$(tail -n +"$((before + 1))" "$WORK/log/mount.log" | grep -o 'failed=\[[0-9, ]*\]' | sort | uniq -c | tr -s ' ' | paste -sd, -)
  echo "$row ${blamed:-none} |"
  sleep 5
done
echo
echo "elkfs chunkservers: $servers; their ids: $(grep -o 'server=[0-9]* addr=[0-9.:]*' "$WORK/log/master.log" | sort -u | paste -sd';' -)"
"$ELKFS" down "$WORK" >/dev/null
rm -f "$SRC"
